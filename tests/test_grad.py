"""Autograd checks of the two VQGAN+CLIP gradient tricks (vqclip/grad.py)."""

import pytest
import torch

from vqclip.grad import clamp_with_grad, replace_grad, straight_through


def test_replace_grad_forward_value_backward_path():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([4.0, 5.0, 6.0], requires_grad=True)
    forward_value = a * 10
    backward_path = b**2
    out = replace_grad(forward_value, backward_path)
    assert torch.equal(out, forward_value)
    out.backward(torch.tensor([1.0, -1.0, 0.5]))
    assert a.grad is None  # nothing flows through the forward value
    torch.testing.assert_close(b.grad, torch.tensor([1.0, -1.0, 0.5]) * 2 * b.detach())


def test_straight_through_forward_is_the_code_and_gradient_is_unchanged():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    codebook = torch.randn(7, 4)
    flat = z.detach().movedim(1, -1).reshape(-1, 4)
    z_q = codebook[torch.cdist(flat, codebook).argmin(-1)].reshape(2, 3, 3, 4).movedim(-1, 1)
    out = straight_through(z, z_q)
    # z + (z_q - z) rounds: equal to z_q up to an ulp, not bit for bit
    torch.testing.assert_close(out, z_q, rtol=0, atol=1e-6)
    upstream = torch.randn_like(z)
    out.backward(upstream)
    assert torch.equal(z.grad, upstream)


LOW, HIGH = 0.0, 1.0


@pytest.mark.parametrize(
    "value, upstream, passes",
    [
        (0.5, 3.0, True),  # inside: always passes
        (0.5, -3.0, True),
        (1.5, 3.0, True),  # above, descent (x -= lr*g) moves it down: passes
        (1.5, -3.0, False),  # above, descent would push it further up: blocked
        (-0.5, -3.0, True),  # below, descent moves it up: passes
        (-0.5, 3.0, False),  # below, descent would push it further down: blocked
        (1.0, -3.0, True),  # on the boundary counts as inside
        (0.0, 3.0, True),
    ],
)
def test_clamp_with_grad_cases(value, upstream, passes):
    x = torch.tensor([value], requires_grad=True)
    out = clamp_with_grad(x, LOW, HIGH)
    assert out.item() == min(max(value, LOW), HIGH)
    out.backward(torch.tensor([upstream]))
    assert x.grad.item() == (upstream if passes else 0.0)


def test_clamp_with_grad_elementwise_and_through_a_loss():
    x = torch.tensor([-0.5, 0.25, 1.5, 2.0], requires_grad=True)
    out = clamp_with_grad(x, LOW, HIGH)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.25, 1.0, 1.0]))
    # pull everything toward 0.5: the out-of-range values are pulled back inside, so all pass
    ((out - 0.5) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * (out.detach() - 0.5))
    # pull everything toward 3: the value above the range would go further out: blocked
    x.grad = None
    ((clamp_with_grad(x, LOW, HIGH) - 3.0) ** 2).sum().backward()
    assert x.grad[2] == 0 and x.grad[3] == 0 and x.grad[0] < 0 and x.grad[1] < 0


def test_clamp_with_grad_sums_gradients_of_several_uses():
    # The mask applies to the total gradient of the clamped tensor, not to each use alone.
    x = torch.tensor([1.5], requires_grad=True)
    out = clamp_with_grad(x, LOW, HIGH)
    (out * 2.0 - out * 1.0).sum().backward()  # total upstream +1: heals, passes
    assert x.grad.item() == 1.0


def test_clamp_with_grad_without_grad():
    x = torch.tensor([-1.0, 0.5, 2.0])
    torch.testing.assert_close(clamp_with_grad(x, LOW, HIGH), torch.tensor([0.0, 0.5, 1.0]))


def test_clamp_with_grad_under_no_grad():
    # e.g. decoding the trainable z for a preview inside torch.no_grad()
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    with torch.no_grad():
        out = clamp_with_grad(x, LOW, HIGH)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 1.0]))
