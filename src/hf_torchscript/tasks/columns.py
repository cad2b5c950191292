"""Arrow types and column builders the task modules use for ``map``'s output columns (pyarrow imported lazily).

A task's ``columns(model)`` returns ``(name, pyarrow type or a function of all rows, value from one row)``.
"""

from __future__ import annotations


def arrow_dtype(name: str):
    import pyarrow as pa

    return {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
            "bool": pa.bool_()}.get(name, pa.float32())  # float16/bfloat16 widen exactly to float32


def tensor_type(spec: dict, drop: int = 1):
    """Arrow type of one row of a manifest output: fixed-size lists for numbered axes, lists for symbolic ones."""
    import pyarrow as pa

    t = arrow_dtype(spec["dtype"])
    for dim in reversed(spec["shape"][drop:]):
        t = pa.list_(t, dim) if isinstance(dim, int) else pa.list_(t)
    return t


def vector_column(name: str, dim: int, dtype: str):
    """A (rows, dim) float column built from numpy, not Python floats (embeddings are most of the data)."""

    def build(results):
        import numpy as np
        import pyarrow as pa

        arr = np.zeros((len(results), dim), dtype=np.float32 if dtype != "float64" else np.float64)
        missing = []
        for i, r in enumerate(results):
            if r is None:
                missing.append(True)
            else:
                t = r[name] if isinstance(r, dict) else r
                arr[i] = (t.double() if dtype == "float64" else t.float()).numpy()
                missing.append(False)
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), dim, mask=pa.array(missing))

    import pyarrow as pa

    build.arrow_type = pa.list_(pa.float64() if dtype == "float64" else pa.float32(), dim)
    return build


def token_struct():
    """One predicted token: {"token", "token_id", "token_str", "score"} (fill-mask, next-token predictions)."""
    import pyarrow as pa

    return pa.struct([("token", pa.string()), ("token_id", pa.int64()), ("token_str", pa.string()),
                      ("score", pa.float64())])
