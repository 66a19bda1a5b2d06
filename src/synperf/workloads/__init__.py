"""End-to-end workloads: from a model (HuggingFace config.json) and a batch to the kernel sequence
of one forward pass as vLLM or SGLang runs it (``engines``), the tensor-parallel all-reduce time
(``comm``), and a static batch (one prefill, then decode steps) priced end to end
(``static_batch``). See docs/end-to-end.md."""
