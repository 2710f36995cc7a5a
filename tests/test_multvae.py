"""Mult-VAE: the ranker contract, the deterministic forward pass computed by hand, the sparse input layer and DP."""

import numpy as np
import pytest
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.early_stopping import EarlyStopping
from llmrec_platform.rankers.multvae import DPSGD, MultVAERanker, SparseInput, multvae_forward, train_multvae
from llmrec_platform.testing import RankerContract, two_group_split


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


class TestMultVAE(RankerContract):
    def make(self, data):
        return MultVAERanker(hidden=16, latent=4, dropout=0.2, epochs=150, batch_size=8, learning_rate=1e-2,
                             anneal_steps=100, seed=3)


def test_forward_by_hand():
    # 2 items -> hidden 1 -> (mean 1, logvar 1) -> hidden 1 -> 2 items; input row (1, 1) is normalised first.
    x = np.array([[1.0, 1.0]])
    weights = [(np.array([[1.0], [1.0]]), np.array([0.0])),  # h = tanh(sqrt(2))
               (np.array([[2.0, 5.0]]), np.array([0.5, 9.0])),  # mean = 2 h + 0.5; the logvar column is dropped
               (np.array([[1.0]]), np.array([0.0])),  # g = tanh(mean)
               (np.array([[1.0, -1.0]]), np.array([0.0, 1.0]))]  # logits = (g, 1 - g)
    h = np.tanh(np.sqrt(2.0))
    g = np.tanh(2 * h + 0.5)
    np.testing.assert_allclose(multvae_forward(x, weights), [[g, 1 - g]], rtol=1e-6)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="dropout"):
        MultVAERanker(dropout=1.0)
    with pytest.raises(ValueError, match="epochs"):
        MultVAERanker(epochs=0)


def test_sparse_histories_score_as_dense_ones():
    rng = np.random.default_rng(1)
    weights = [(rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)),
               (rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)),
               (rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)),
               (rng.normal(size=(8, 30)).astype(np.float32), rng.normal(size=30).astype(np.float32))]
    x = sp.random(7, 30, density=0.2, format="csr", random_state=2, dtype=np.float32)
    x.data[:] = 1.0  # binary histories, one of them possibly empty
    np.testing.assert_allclose(multvae_forward(x, weights), multvae_forward(x.toarray(), weights), rtol=1e-5, atol=1e-5)


def test_the_sparse_input_layer_is_the_dense_product():
    import torch

    linear = torch.nn.Linear(30, 8)
    layer = SparseInput(linear)
    x = sp.random(5, 30, density=0.3, format="csr", random_state=4, dtype=np.float32)
    out = layer(torch.from_numpy(x.indices.astype(np.int64)), torch.from_numpy(x.indptr[:-1].astype(np.int64)),
                torch.from_numpy(x.data))
    expected = linear(torch.from_numpy(x.toarray()))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()  # the gradient reaches the item rows of W, (items, hidden), and the bias
    assert layer.weight.grad.shape == (30, 8) and torch.count_nonzero(layer.weight.grad.sum(dim=1)) > 0


def test_early_stopping_is_off_under_dp_sgd(data):
    private = MultVAERanker(hidden=8, latent=2, epochs=2, batch_size=4, seed=3, num_threads=1, dp_epsilon=8.0,
                            patience=3).fit(data)
    assert private.best_epoch_ is None and private.validation_curve_ is None
    assert 0 < private.dp_spent_epsilon_ <= 8.0 + 1e-6
    with pytest.raises(ValueError, match="early stopping is off under DP-SGD"):
        train_multvae(data.train, 8, 2, 0.2, 2, 4, 1e-2, 0.2, 10, 3, private=DPSGD(8.0),
                      stopping=EarlyStopping.for_data(data, 3, 1, 100, 3))


def test_the_default_trains_every_epoch_without_reading_the_validation_fold(data):
    # Early stopping is opt-in: on ML-100K it kept epoch 75 of 80 without saving an epoch, and those weights moved
    # the hybrid (which takes Mult-VAE as a candidate ranker) beyond its tolerance. The default model is the
    # last epoch's, whatever the validation fold holds.
    settings = dict(hidden=8, latent=2, epochs=6, batch_size=4, seed=3, num_threads=1)
    fitted = MultVAERanker(**settings).fit(data)
    blind = InteractionData(data.user_ids, data.item_ids, data.train, data.train_timestamps,
                            valid=sp.csr_matrix(data.valid.shape, dtype=np.float32), test=data.test)
    assert fitted.best_epoch_ is None and fitted.validation_curve_ is None
    for (w, b), (w_blind, b_blind) in zip(fitted.layers_, MultVAERanker(**settings).fit(blind).layers_, strict=True):
        np.testing.assert_array_equal(w, w_blind)
        np.testing.assert_array_equal(b, b_blind)
    stopped = MultVAERanker(**settings, patience=1, eval_every=1).fit(data)
    assert stopped.best_epoch_ is not None  # still there when asked for


def test_max_cells_caps_the_epochs_and_says_why(data):
    n_users, n_items = data.train.shape
    settings = dict(hidden=8, latent=2, epochs=6, batch_size=4, seed=3, num_threads=1)
    uncapped = MultVAERanker(**settings, max_cells=n_users * n_items * 6).fit(data)
    assert uncapped.epochs_trained_ == 6 and uncapped.epoch_note_ is None
    capped = MultVAERanker(**settings, max_cells=n_users * n_items * 2.5).fit(data)
    assert capped.epochs_trained_ == 2
    assert "2 epochs of 6" in capped.epoch_note_ and "max_cells" in capped.epoch_note_
    two = MultVAERanker(**{**settings, "epochs": 2}).fit(data)  # the capped fit is the 2-epoch fit, weight for weight
    for (w, b), (w_two, b_two) in zip(capped.layers_, two.layers_, strict=True):
        np.testing.assert_array_equal(w, w_two)
        np.testing.assert_array_equal(b, b_two)
    assert MultVAERanker(**settings, max_cells=1).fit(data).epochs_trained_ == 1  # never fewer than one epoch
    assert MultVAERanker(**settings, max_cells=0).fit(data).epochs_trained_ == 6  # 0: no cap
    with pytest.raises(ValueError, match="max_cells"):
        MultVAERanker(max_cells=-1)


def dense_input_reference(x: sp.csr_matrix, hidden: int, latent: int, dropout: float, epochs: int, batch_size: int,
                          seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The recipe before the sparse input layer: a dense nn.Linear on the whole normalised, dropped-out
    (batch x items) input and a dense multinomial log-likelihood, with the same seeded draws in the same order."""
    import torch

    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    n_users, n_items = x.shape
    sizes = [(n_items, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, n_items)]
    layers = [torch.nn.Linear(a, b) for a, b in sizes]
    for layer in layers:
        torch.nn.init.xavier_normal_(layer.weight, generator=generator)
        torch.nn.init.normal_(layer.bias, std=0.001, generator=generator)
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=1e-3, fused=True)
    binary = (x > 0).astype(np.float32).tocsr()
    step = 0
    for _ in range(epochs):
        permutation = rng.permutation(n_users)
        for start in range(0, n_users, batch_size):
            batch = torch.from_numpy(binary[permutation[start:start + batch_size]].toarray())
            h = torch.nn.functional.normalize(batch, dim=1)
            h = h * (torch.rand(h.shape, generator=generator) >= dropout).float() / (1.0 - dropout)
            h = layers[1](torch.tanh(layers[0](h)))
            mu, logvar = h[:, :latent], h[:, latent:]
            z = mu + torch.randn(mu.shape, generator=generator) * torch.exp(0.5 * logvar)
            logits = layers[3](torch.tanh(layers[2](z)))
            nll = -(torch.log_softmax(logits, dim=1) * batch).sum(dim=1).mean()
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()
            loss = nll + min(0.2, step / 2000) * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return [(layer.weight.T.detach().numpy().copy(), layer.bias.detach().numpy().copy()) for layer in layers]


def test_the_sparse_input_layer_trains_the_dense_layers_model():
    """Two epochs of `train_multvae` (sparse input, gathered likelihood) against the dense recipe it replaced, on a
    skewed catalogue where most items are missing from most batches: the same weights to float32 rounding (the sums
    run in another order; 3e-8 at most here), rtol 1e-5 / atol 1e-7, against moves of 6e-3 from training."""
    rng = np.random.default_rng(11)
    popularity = 1.0 / np.arange(1, 91) ** 0.9
    x = sp.csr_matrix((rng.random((70, 90)) < 0.4 * popularity / popularity.max() + 0.02).astype(np.float32))
    sparse = train_multvae(x, 16, 4, 0.5, 2, 25, 1e-3, 0.2, 2000, 5)
    dense = dense_input_reference(x, 16, 4, 0.5, 2, 25, 5)
    for (w, b), (w_dense, b_dense) in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(w, w_dense, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b, b_dense, rtol=1e-5, atol=1e-7)
    untrained = dense_input_reference(x, 16, 4, 0.5, 0, 25, 5)
    assert np.abs(sparse[0][0] - untrained[0][0]).max() > 1e-4  # training moved the first layer: the check can fail
