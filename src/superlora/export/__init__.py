"""``superlora export``: a finished run as a file other tools run without superlora or peft.

One module per concern: ``export`` (what the verb does, in order), ``gguf_file`` (the GGUF writer: tensors and
model metadata), ``gguf_vocab`` (the tokenizer as GGUF metadata), ``modelfile`` (Ollama's Modelfile), ``space``
(a Hugging Face Space folder; ``space_app`` is its app.py, copied, never imported), ``card`` (the model card) and
``hub`` (the Hugging Face Hub upload); ``cli`` registers the verb.
"""
