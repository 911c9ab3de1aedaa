"""``superlora serve``: a local Gradio app to try the models, compare base and LoRA output, and watch
super weights at work.

Layout: ``limits`` (server-side caps), ``access`` (the login, and one log line per refused request),
``state`` (models loaded once, one lock), ``generate`` (model calls, no Gradio), ``runs`` (training run
folders), ``plots``, ``tabs/`` (one module per tab), ``ui`` (assembly and launch), ``api`` (the
OpenAI-compatible API, ``--api``/``--api-only``), ``offline`` (environment, private temp folder, SIGTERM),
``cli`` (the verb). Gradio is imported only by ``ui`` and ``tabs``.
"""
