"""The gateway: one OpenAI-compatible endpoint per node in front of every model of the stack.

Modules, one job each: server (run it with uvicorn, one process or several on one port), app (state and
routes), endpoints (every routed path and the tasks that serve it), intake (request id, key, body, model,
limits before the first attempt; usage and the log line after), exchange (one POST from key to last
byte: attempts, metrics, client disconnects), routing (route table, replica balancing), health (the
watchdog's verdicts), upstream (the HTTP client seam), passthrough (vLLM and [[program]] backends, bytes
forwarded as they come), worker (the FastChat worker and controller protocol), fastchat (worker output
turned into OpenAI responses), responses (the Responses API on that chat path), prompts, chat_template
and conversation (building the prompt), tool_calls (tool_choice and `<tool_call>` parsing), validation
(request bodies), keys (who a key is), limits (per-key limits), usage (tokens and per-key counters),
models (/v1/models fields, /version), metrics, errors (OpenAI's and Anthropic's error formats).

Nothing here is imported by the CLI at start: `baremetal gateway` imports it when it runs.
"""
