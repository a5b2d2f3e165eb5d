"""The gateway: one OpenAI-compatible endpoint per node in front of every model of the stack.

Modules, one job each: server (run it with uvicorn), app (state and routes), exchange (one POST from
key to last byte: attempts, metrics, client disconnects), routing (route table, replica balancing),
health (the watchdog's verdicts), upstream (the HTTP client seam), passthrough (vLLM and [[program]]
backends, bytes forwarded as they come), worker (the FastChat worker and controller protocol),
fastchat (worker output turned into OpenAI responses), prompts, chat_template and conversation
(building the prompt), tool_calls (tool_choice and `<tool_call>` parsing), validation (request
bodies), auth, metrics, errors (OpenAI's error format).

Nothing here is imported by the CLI at start: `baremetal gateway` imports it when it runs.
"""
