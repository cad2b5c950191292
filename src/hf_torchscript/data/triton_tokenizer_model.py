"""Triton Python-backend model written by ``hf-torchscript triton --with-tokenizer``: TEXT -> token ids.

Needs ``tokenizers`` and ``numpy`` in Triton's Python environment (``pip install tokenizers``).
It encodes exactly as hf_torchscript's runtime does: the artifact's tokenizer.json with its own
padding and truncation off; each request's rows padded with pad_token_id to its longest text;
attention_mask 1 on tokens; token_type_ids from the encoding; texts over max_length cut to it.
Its settings come from the ``parameters`` of its config.pbtxt.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, params.get("tokenizer_file", "tokenizer.json")))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = int(params["max_length"])
        self.pad_token_id = int(params["pad_token_id"])
        self.outputs = params["inputs"].split(",")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                texts = self._texts(pb_utils.get_input_tensor_by_name(request, "TEXT"))
                arrays = self._encode(texts)
                tensors = [pb_utils.Tensor(name, arrays[name]) for name in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except ValueError as e:  # bad input: this request fails with one line, the others go on
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses

    def _texts(self, tensor):
        if tensor is None:
            raise ValueError("no TEXT input; send TEXT as BYTES, one string per row")
        texts = []
        for i, raw in enumerate(tensor.as_numpy().reshape(-1)):
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                raise ValueError(f"TEXT[{i}] is not UTF-8; send UTF-8 text") from None
            if not text.strip():
                raise ValueError(f"TEXT[{i}] is empty; send text")
            texts.append(text)
        if not texts:
            raise ValueError("TEXT has no rows; send at least one string")
        return texts

    def _encode(self, texts):
        encs = self.tokenizer.encode_batch(texts)
        if any(len(e.ids) > self.max_length for e in encs):
            self.tokenizer.enable_truncation(self.max_length)
            try:
                encs = self.tokenizer.encode_batch(texts)
            finally:
                self.tokenizer.no_truncation()
        longest = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), longest), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encs), longest), dtype=np.int64)
        types = np.zeros((len(encs), longest), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
