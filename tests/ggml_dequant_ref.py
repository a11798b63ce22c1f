#!/usr/bin/env python3
"""tests/ggml_dequant_ref.py: independent reference for quant/ggml_quants.c, using gguf-py.

Writes OUT, a list of records that tests/test_ggml_dequant.c (--ref OUT) replays:
  char kind[8] ("deq" or "quant"), int32 ggml_type, int32 0, int64 n, int64 nbytes,
  uint8 raw[nbytes], float32 values[n]
"deq":   raw blocks -> gguf-py dequantize -> values (real SmolLM2 tensors + random blocks).
"quant": values -> gguf-py quantize -> raw (gguf-py's Q8_0/Q4_0/Q4_1 match ggml's reference).
Usage: ggml_dequant_ref.py OUT [model.gguf]   exit 77 if gguf/numpy are missing.
"""
import struct
import sys

try:
    import numpy as np
    from gguf import GGUFReader, GGMLQuantizationType as T, quants
except ImportError as ex:
    print(f"SKIP: python gguf/numpy not available ({ex})")
    sys.exit(77)

BLOCK = {T.Q8_0: (32, 34), T.Q4_0: (32, 18), T.Q4_1: (32, 20),
         T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210)}
FP16_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
               T.Q6_K: [208]}


def record(f, kind, qtype, raw, values):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    f.write(struct.pack("<8sii", kind.encode(), int(qtype), 0))
    f.write(struct.pack("<qq", values.size, raw.size))
    f.write(raw.tobytes())
    f.write(values.tobytes())


def main():
    out = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else None
    rng = np.random.default_rng(1234)
    n_rec = 0
    with open(out, "wb") as f:
        # 1. random blocks with finite fp16 scales, every load-only type
        for qtype, (bs, bb) in BLOCK.items():
            nb = 64
            raw = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
            for off in FP16_FIELDS[qtype]:
                h = (rng.normal(size=nb) * 0.02).astype(np.float16).view(np.uint8).reshape(nb, 2)
                raw[:, off:off + 2] = h
            record(f, "deq", qtype, raw, quants.dequantize(raw, qtype))
            n_rec += 1
        # 2. gguf-py's quantizers (bit-exact with ggml's reference)
        for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
            x = rng.normal(size=(64, 32)).astype(np.float32)
            x[3] = 0.0                           # all-zero block
            x[5] = 0.125                         # constant block
            x[7, 9] = 40.0                       # outlier
            x[8] = -np.abs(x[8])                 # negative-only
            raw = quants.quantize(x, qtype)
            record(f, "quant", qtype, raw, x)
            n_rec += 1
        # 3. real tensors from the model file
        if model:
            r = GGUFReader(model)
            seen = {}
            for t in r.tensors:
                qt = T(t.tensor_type)
                if qt not in BLOCK or seen.get(qt, 0) >= 3:
                    continue
                bs, bb = BLOCK[qt]
                raw = np.asarray(t.data).reshape(-1)
                nblk = min(raw.size // bb, 4096)
                raw = raw[:nblk * bb]
                record(f, "deq", qt, raw, quants.dequantize(raw.reshape(nblk, bb), qt))
                seen[qt] = seen.get(qt, 0) + 1
                n_rec += 1
    print(f"wrote {n_rec} records to {out}")


if __name__ == "__main__":
    main()
