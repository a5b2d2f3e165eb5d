"""Start FastChat's OpenAI API server with keys resolved here, so they are never on a command line or in a log.

Runs in FastChat's env (standard library + FastChat only). Usage:
    python fastchat_api.py --module fastchat.serve.openai_api_server --keys-file FILE [--keys-version V] -- FLAGS
FILE (mode 0600, written by `baremetal render`) holds {"specs": [literal | "env:VAR" | "file:PATH", ...]}.
FastChat's create_openai_api_server() parses FLAGS and logs them; the keys are set afterwards.
"""

import importlib
import json
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


def read_specs(path: str) -> list[str]:
    """The key specs in the keys file that `baremetal render` wrote."""
    try:
        with open(path, encoding="utf-8") as handle:
            specs = json.load(handle)["specs"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"api_keys: cannot read the keys file {path} ({error}); run `baremetal up` again")
    if not isinstance(specs, list) or not all(isinstance(spec, str) for spec in specs):
        sys.exit(f"api_keys: {path} holds no list of key specs; run `baremetal up` again")
    return specs


def main(argv: list[str]) -> None:
    split = argv.index("--") if "--" in argv else len(argv)
    ours, flags = argv[:split], argv[split + 1:]
    options = dict(zip(ours[::2], ours[1::2]))
    module_name = options.get("--module")
    if not module_name:
        sys.exit("fastchat_api.py: --module is required")
    specs = read_specs(options["--keys-file"]) if "--keys-file" in options else []
    keys = [key for spec in specs for key in resolve_key(spec)]
    server = importlib.import_module(module_name)
    sys.argv = [module_name] + flags
    args = server.create_openai_api_server()
    server.app_settings.api_keys = keys
    # The tool-calling fork's server (openai_api_server_for_tool) checks keys with the check_api_key of
    # fastchat.serve.openai_api_server, which reads that module's settings, not its own.
    importlib.import_module("fastchat.serve.openai_api_server").app_settings.api_keys = keys
    import uvicorn

    uvicorn.run(server.app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
