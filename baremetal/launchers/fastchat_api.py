"""Start FastChat's OpenAI API server with keys resolved here, so they are never on a command line or in a log.

Runs in FastChat's env (standard library + FastChat only). Usage:
    python fastchat_api.py --module fastchat.serve.openai_api_server --key env:VAR [--key file:PATH] -- FLAGS
FastChat's create_openai_api_server() parses FLAGS and logs them; the keys are set afterwards.
"""

import importlib
import os
import sys


def resolve_key(spec: str) -> list[str]:
    """Keys from one spec: env:VAR, file:PATH (one key per line, # comments) or the key itself."""
    if spec.startswith("env:"):
        value = os.environ.get(spec[4:], "")
        if not value:
            sys.exit(f"api_keys: environment variable {spec[4:]} is empty or unset")
        return [value]
    if spec.startswith("file:"):
        try:
            with open(spec[5:], encoding="utf-8") as handle:
                keys = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        except OSError as error:
            sys.exit(f"api_keys: cannot read {spec[5:]}: {error.strerror}")
        if not keys:
            sys.exit(f"api_keys: {spec[5:]} holds no key")
        return keys
    return [spec]


def main(argv: list[str]) -> None:
    split = argv.index("--") if "--" in argv else len(argv)
    ours, flags = argv[:split], argv[split + 1:]
    module_name, specs = None, []
    for flag, value in zip(ours[::2], ours[1::2]):
        if flag == "--module":
            module_name = value
        elif flag == "--key":
            specs.append(value)
    if not module_name:
        sys.exit("fastchat_api.py: --module is required")
    keys = [key for spec in specs for key in resolve_key(spec)]
    server = importlib.import_module(module_name)
    sys.argv = [module_name] + flags
    args = server.create_openai_api_server()
    server.app_settings.api_keys = keys
    import uvicorn

    uvicorn.run(server.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
