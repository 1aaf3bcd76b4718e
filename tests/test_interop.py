"""NumPy interop: __array__, from_numpy, .numpy(), tolist, NumPy operands on either side."""

import numpy as np

import tinygrad_bn as tg


def test_asarray_and_numpy_share_memory():
    t = tg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert np.shares_memory(np.asarray(t), t.numpy())
    # .numpy() on a tensor that requires grad is a detached view (documented), no error
    v = t.numpy()
    assert v is t.data
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert not np.shares_memory(np.array(t, copy=True), t.numpy())


def test_from_numpy_shares_float_and_copies_others():
    f = np.zeros(3, np.float32)
    assert np.shares_memory(tg.Tensor.from_numpy(f).numpy(), f)
    i = np.zeros(3, np.int32)  # integer data keeps its dtype and memory, as PyTorch
    assert tg.from_numpy(i).dtype == np.int32 and np.shares_memory(tg.from_numpy(i).numpy(), i)
    u = np.zeros(3, np.uint16)  # a dtype PyTorch lacks is copied to int64
    t = tg.from_numpy(u)
    assert t.dtype == np.int64 and not np.shares_memory(t.numpy(), u)


def test_tolist_and_item():
    assert tg.Tensor([[1, 2], [3, 4]]).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert tg.Tensor(np.float64(2.5)).item() == 2.5


def test_numpy_scalars_and_arrays_on_either_side():
    t = tg.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    # a NumPy scalar is a scalar (the tensor's dtype); a float64 array promotes, as in PyTorch
    for out, dtype in (
        (np.float64(2.0) * t, np.float32),
        (t * np.float64(2.0), np.float32),
        (np.array([2.0, 2.0]) * t, np.float64),
        (t * np.array([2.0, 2.0]), np.float64),
        (np.array([0.0, 0.0]) + t * 2, np.float64),
        (np.array([0.0, 0.0], np.float32) + t * 2, np.float32),
    ):
        assert isinstance(out, tg.Tensor) and out.dtype == dtype
        np.testing.assert_array_equal(out.numpy(), [2.0, 4.0])
    (np.array([1.0, 3.0]) - t).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [-1.0, -1.0])
    assert isinstance(np.array([[1.0, 0.0], [0.0, 1.0]]) @ t, tg.Tensor)
