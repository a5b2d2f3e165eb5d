"""The gateway: one OpenAI-compatible endpoint per node in front of every model of the stack.

Modules, one job each: app (routes, the exchange with the client), routing (route table, replica
balancing), health (the watchdog's verdicts), upstream (the HTTP client seam), passthrough (vLLM and
[[program]] backends, bytes forwarded as they come), worker (the FastChat worker protocol), fastchat
(worker output turned into OpenAI responses), prompts, chat_template and conversation (building the
prompt), tool_calls (parsing `<tool_call>` output), validation (request bodies), auth, metrics, errors.

Nothing here is imported by the CLI at start: `baremetal gateway` imports it when it runs.
"""
