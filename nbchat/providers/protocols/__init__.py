"""Protocols shared by several providers, each in a module named for what it is.

- `openai_wire`: the OpenAI chat-completions codec (pure: request bodies, chunk parsing).
- `openai_compat`: the HTTP engine for OpenAI-compatible endpoints (subclassed per provider).
- `cog_prediction`: the Cog prediction protocol (inputs from a model's OpenAPI schema, outputs,
  stop cutting), spoken by Replicate and by a self-hosted Cog server.
- `nvcf`: NVIDIA Cloud Functions (NVCF) asynchronous invocation: 202 + `NVCF-REQID` polling.
- `nvidia_genai`: NVIDIA's GenAI text-to-image wire.

Provider modules import from here and from `nbchat.core`, never from each other.
"""
