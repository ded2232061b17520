"""
The run semantics, and nothing else: no store, no thread pool, no logging sink.

The modules, in import order (each imports only those above it, and `choreograph._errors`):

- `bag`: the DataBag, a run's outputs by step name.
- `retry`: retry policies.
- `context`: the `Context` a callback sees, and the context variable behind `get_data_bag`.
- `callbacks`: `Step`, and the one-time inspection of its callbacks into call plans and checks.
- `fastpath`: a plan's generated straight-line function for runs that only succeed.
- `plan`: the plan tree (steps are leaves, sequences are nodes) and its flattened run order.
- `result`: `RunResult` and `Call`, read-only views of a finished run.
- `state`: one run's mutable state.
- `emit`: the one place that sends `choreograph.events` to a run's listener.
- `outcome`: the contract's outcome rules, as a pure decision.
- `attempt`: calling one callback: await, timeout, retries.
- `loop`: walking the plan, restoring stored steps, compensating.
- `drivers`: serving a run loop from plain code or from an event loop.
- `runs`: setting a run up, running it, and wrapping its result.
"""
