"""`edgechat serve`: the loaded model behind OpenAI's HTTP API and Ollama's.

Same model resolution, fit check and sampling defaults as `chat`. Loopback needs no
key; any other address does, so a model is never open to a network by accident.
"""

from __future__ import annotations

import sys

from edgechat.cli.common import _request, _warn


def _store_key(args) -> int:
    import getpass

    from edgechat.models import credentials

    value, _ = credentials.api_key(args.api_key)
    if value is None:
        value = getpass.getpass("API key to keep in the keyring: ")
    where = credentials.store_api_key(value)
    sys.stderr.write(f"API key stored in {where}\n")
    return 0


def _ollama_model(model_id: str, planned, info: dict, defaults):
    """The served model as Ollama's API describes it (/api/tags, /api/show, /api/ps)."""
    from edgechat.facts.gguf import inspect_file, metadata
    from edgechat.llama.prompts import chat_template
    from edgechat.serve.ollama import describe

    path = planned.plan.model_path
    meta = metadata(path)
    own = meta.get("tokenizer.chat_template")
    template = chat_template(own if isinstance(own, str) else None, info["architecture"] or "")
    return describe(
        model_id,
        path,
        meta,
        quant=inspect_file(path).file_type,
        n_params=info["n_params"],
        n_ctx=info["n_ctx"],
        sampling=defaults,
        template=template,
        ram=planned.estimate.ram_needed,
        vram=planned.estimate.vram,
    )


def cmd_serve(args) -> int:
    from edgechat import config, privacy
    from edgechat.errors import EdgechatError
    from edgechat.models import credentials, registry
    from edgechat.serve.app import ServeConfig
    from edgechat.serve.runner import RunnerWorker
    from edgechat.serve.server import bind, is_loopback, run
    from edgechat.service import plan_model, sampling

    if args.store_key:
        return _store_key(args)
    privacy.go_offline()
    key, source = credentials.api_key(args.api_key)
    if not is_loopback(args.host) and key is None:
        raise EdgechatError(
            f"listening on {args.host} opens the model to other machines, so it needs an API "
            f"key: set {credentials.API_ENV}, store one with `edgechat serve --store-key`, "
            "or pass --api-key KEY"
        )
    settings = config.load()
    planned = plan_model(
        _request(args, settings, parallel=args.parallel or 0, exact=args.exact), say=_warn
    )
    sock = bind(args.host, args.port)  # before loading: a taken port fails in a moment
    # The model runs in a runner process (serve/runner.py): a crash there is answered.
    worker = RunnerWorker(planned, args.verbose, queue_size=args.queue, say=_warn)
    sys.stderr.write(f"loading {planned.plan.model_path.name} ...\n")
    worker.start()
    path = planned.plan.model_path
    model_id = next((k for k, v in registry.installed().items() if v == path), path.stem)
    info = worker.info
    meta = {k: info.get(k) for k in ("n_ctx", "n_seq", "n_ctx_train", "n_params", "size_bytes")}
    defaults = sampling(settings, args)
    serve_config = ServeConfig(
        model_id=model_id,
        aliases=frozenset({model_id, path.name, path.stem}),
        sampling=defaults,
        api_key=key,
        meta=meta | {"architecture": info.get("architecture")},
        ollama=_ollama_model(model_id, planned, info, defaults),
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    rule = (
        f"API key required (from {source})" if key else "no API key: only this machine can connect"
    )

    def ready() -> None:
        sys.stderr.write(
            f"edgechat: serving {model_id} at http://{shown}:{port}/v1 (OpenAI API; Ollama's at"
            f" http://{shown}:{port}) · context {info['n_ctx']} for each of {info['n_seq']}"
            f" replies at once{' (exact)' if args.exact else ''} · queue {args.queue} · {rule}"
            " · Ctrl-C stops\n"
        )
        sys.stderr.flush()

    try:
        run(worker, serve_config, sock, on_ready=ready, access_log=not args.quiet)
    finally:
        worker.stop()
        sock.close()
    return 0


def register(sub) -> None:
    from edgechat.cli.options import add_model_options, add_sampling_options
    from edgechat.limits import flag

    srv = sub.add_parser(
        "serve",
        help="serve the model over OpenAI's and Ollama's HTTP APIs (loopback by default)",
    )
    add_model_options(srv)
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    srv.add_argument(
        "--port", type=flag("port"), default=8080, help="port (8080; 0 picks a free one)"
    )
    srv.add_argument(
        "--api-key",
        metavar="KEY",
        help="require this key (needed beyond loopback; EDGECHAT_API_KEY or the keyring "
        "keep it out of the process list)",
    )
    srv.add_argument(
        "--parallel",
        type=flag("parallel"),
        metavar="N",
        help="replies generated at once, each with its own --ctx of cache (default: as many "
        "as fit the memory, at most 4)",
    )
    srv.add_argument(
        "--exact",
        action="store_true",
        help="each greedy reply token for token what it would be alone, whatever else runs: "
        "only llama.cpp CPU kernels that sum a row the same way in any batch (K-quant "
        "prompts read slower)",
    )
    srv.add_argument(
        "--queue", type=flag("queue"), default=32, metavar="N", help="requests that may wait (32)"
    )
    add_sampling_options(srv, "temperature", "max_tokens")
    srv.add_argument("--quiet", action="store_true", help="no line per request")
    srv.add_argument(
        "--store-key", action="store_true", help="keep the API key in the keyring and exit"
    )
    srv.set_defaults(func=cmd_serve)
