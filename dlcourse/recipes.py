"""Ready-made training runs, shared by the `dlcourse train` command and the tests that
prove each model learns. Each returns a dict of measured results and writes a loss-curve PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import dlcourse
from dlcourse import data, nn, optim
from dlcourse.train import evaluate, fit

__all__ = ["RECIPES", "train_mlp", "train_cnn", "train_resnet", "train_lstm", "train_cnnlstm",
           "train_transformer", "train_autoencoder", "train_convautoencoder", "train_denoising"]


def _loaders(train, test, batch_size, seed):
    train_loader = data.DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed)
    test_loader = data.DataLoader(test, batch_size=512)
    return train_loader, test_loader


def hold_out(train, fraction: float, seed: int):
    """Split (x, y) into a training part and a stratified validation part of `fraction`."""
    from sklearn.model_selection import train_test_split

    x, y = train
    x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed)
    return (x_fit, y_fit), (x_val, y_val)


def train_mlp(epochs: int = 20, seed: int = 0, out_dir="outputs", progress=None,
              dataset: str = "digits", mnist_path=None, lr: float = 1e-3, batch_size: int = 64,
              validation_fraction: float = 0.15) -> dict:
    """The documents' MLP trained with Adam: on the embedded digits (64 inputs) by default,
    or on MNIST / Fashion-MNIST IDX files the user has (784 inputs).

    The loss curve and the best epoch come from a validation split held out of the
    training data (stratified, `validation_fraction`); the test split is evaluated once,
    after training."""
    dlcourse.manual_seed(seed)
    if dataset == "digits":
        train, test = data.load_digits()
    else:
        train, test = data.load_mnist(mnist_path, kind=dataset)
    train, validation = hold_out(train, validation_fraction, seed)
    model = dlcourse.models.MLP(in_features=train[0].shape[1])
    train_loader, val_loader = _loaders(train, validation, batch_size, seed)
    loss_fn = nn.CrossEntropyLoss()
    history = fit(model, loss_fn, optim.Adam(model, lr=lr), train_loader, epochs,
                  val_loader=val_loader, progress=progress)
    result = evaluate(model, loss_fn, data.DataLoader(test, batch_size=512))
    plot_path = Path(out_dir) / f"mlp-{dataset}-loss.png"
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    history.plot(plot_path, title=f"MLP on {dataset}")
    return {"model": model, "history": history, "val_loss": history.val_loss[-1],
            "val_accuracy": history.val_accuracy[-1], "best_epoch": history.best_epoch,
            "test_loss": result["loss"], "test_accuracy": result["accuracy"], "plot": str(plot_path)}


def _save_plot(history, out_dir, name: str, title: str, **labels) -> str:
    """history.plot into out_dir/<name>-loss.png; labels: ylabel, baselines (see History.plot)."""
    plot_path = Path(out_dir) / f"{name}-loss.png"
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    history.plot(plot_path, title=title, **labels)
    return str(plot_path)


def _classify(model, train, test, name, title, epochs, seed, out_dir, progress, lr, batch_size,
              clip_grad_norm=None, cosine: bool = False) -> dict:
    """Train a classifier with Adam and cross-entropy (with `cosine`, the learning rate
    follows a cosine from lr down to 0 over the epochs); evaluate on the test split."""
    train_loader, test_loader = _loaders(train, test, batch_size, seed)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model, lr=lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs) if cosine else None
    history = fit(model, loss_fn, optimizer, train_loader, epochs, val_loader=test_loader,
                  scheduler=scheduler, progress=progress, clip_grad_norm=clip_grad_norm)
    result = evaluate(model, loss_fn, test_loader)
    return {"model": model, "history": history, "test_loss": result["loss"],
            "test_accuracy": result["accuracy"], "plot": _save_plot(history, out_dir, name, title)}


# ---------------------------------------------------------------------- chapter 9
def train_cnn(epochs: int = 15, seed: int = 0, out_dir="outputs", progress=None,
              lr: float = 2e-3, batch_size: int = 32) -> dict:
    """The documents' two-stage CNN on the 8×8 digits (N, 1, 8, 8), Adam with a cosine schedule."""
    dlcourse.manual_seed(seed)
    train, test = data.load_digits(flatten=False)
    model = dlcourse.models.CNN()
    return _classify(model, train, test, "cnn-digits", "CNN on digits", epochs, seed, out_dir,
                     progress, lr, batch_size, cosine=True)


def train_resnet(epochs: int = 10, seed: int = 0, out_dir="outputs", progress=None,
                 width: int = 16, lr: float = 2e-3, batch_size: int = 64) -> dict:
    """ResNet-18 with the small-input stem on the 8×8 digits, Adam with a cosine schedule;
    `width` base channels (torchvision's 64 works too, about 16 times slower)."""
    dlcourse.manual_seed(seed)
    train, test = data.load_digits(flatten=False)
    model = dlcourse.models.resnet18(width=width)
    return _classify(model, train, test, "resnet18-digits", "ResNet-18 on digits", epochs, seed,
                     out_dir, progress, lr, batch_size, cosine=True)


# ---------------------------------------------------------------------- chapter 11
def train_lstm(epochs: int = 20, seed: int = 0, out_dir="outputs", progress=None,
               seq_len: int = 64, batch_size: int = 32, lr: float = 5e-3, hidden_size: int = 128,
               embedding_dim: int = 32, sample_length: int = 300, temperature: float = 0.7) -> dict:
    """The character LSTM language model on the shipped corpus (last 10% held out).

    The loss is the mean cross-entropy over all N·T next-character predictions, so the
    logits (N, T, V) are viewed as (N·T, V). Reports the validation cross-entropy (nats per
    character) next to the unigram baseline (training-set character frequencies), and a
    sample of generated text.
    """
    from tqdm.auto import tqdm

    from dlcourse.models import CharVocabulary, LSTMLanguageModel
    from dlcourse.nn.utils import clip_grad_norm_
    from dlcourse.sequences import load_corpus, split_text, text_windows, unigram_cross_entropy
    from dlcourse.train import History

    dlcourse.manual_seed(seed)
    text = load_corpus()
    vocabulary = CharVocabulary(text)
    train_text, val_text = split_text(text)
    train_ids, val_ids = vocabulary.encode(train_text), vocabulary.encode(val_text)
    train_loader = data.DataLoader(text_windows(train_ids, seq_len), batch_size=batch_size,
                                   shuffle=True, seed=seed)
    val_windows = text_windows(val_ids, seq_len)
    model = LSTMLanguageModel(len(vocabulary), embedding_dim=embedding_dim, hidden_size=hidden_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model, lr=lr)
    vocab_size = len(vocabulary)

    def validation_loss():
        model.eval()
        logits = model(val_windows[0])
        model.train()
        return loss_fn(logits.reshape(-1, vocab_size), val_windows[1].reshape(-1))

    if progress is None:
        import sys
        progress = sys.stderr.isatty()
    history = History()
    with tqdm(total=epochs * len(train_loader), disable=not progress, unit="batch", leave=False) as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for x, y in train_loader:
                logits = model(x)
                loss = loss_fn(logits.reshape(-1, vocab_size), y.reshape(-1))
                optimizer.zero_grad()
                model.backward(loss_fn.backward().reshape(logits.shape))
                # The usual guard against exploding gradients in recurrent networks.
                clip_grad_norm_(model, 5.0)
                optimizer.step()
                losses.append(loss)
                bar.update(1)
            history.batch_loss += losses
            history.epochs.append(epoch)
            history.lr.append(lr)
            history.train_loss.append(float(np.mean(losses)))
            history.train_accuracy.append(None)
            history.val_loss.append(validation_loss())
            history.val_accuracy.append(None)
            if history.val_loss[-1] == min(history.val_loss):
                history.best_epoch = epoch
    baseline = unigram_cross_entropy(train_ids, val_ids, vocab_size)
    val_loss = history.val_loss[-1]
    sample = model.sample("The ", sample_length, temperature=temperature, seed=seed, vocabulary=vocabulary)
    return {"model": model, "vocabulary": vocabulary, "history": history,
            "val_cross_entropy": val_loss, "unigram_cross_entropy": baseline,
            "relative_to_unigram": val_loss / baseline, "sample": sample,
            "plot": _save_plot(history, out_dir, "lstm-language-model", "Character LSTM",
                               ylabel="cross-entropy (nats per character)",
                               baselines={"unigram baseline (validation)": baseline})}


def train_cnnlstm(epochs: int = 8, seed: int = 0, out_dir="outputs", progress=None,
                  n_train: int = 3000, n_test: int = 1000, length: int = 5, repeats: int = 3,
                  lr: float = 3e-3, batch_size: int = 32) -> dict:
    """The CNN-LSTM on sequences of `length` digit images, labelled with the digit shown
    `repeats` times (`dlcourse.sequences.digit_sequences`); chance is 10%, reading a single
    frame gives repeats/length."""
    from dlcourse.sequences import digit_sequences

    dlcourse.manual_seed(seed)
    train = digit_sequences(n_train, length, repeats, split="train", seed=seed)
    test = digit_sequences(n_test, length, repeats, split="test", seed=seed + 1)
    model = dlcourse.models.CNNLSTM()
    return _classify(model, train, test, "cnnlstm-digit-sequences", "CNN-LSTM on digit sequences",
                     epochs, seed, out_dir, progress, lr, batch_size, clip_grad_norm=5.0)


# ---------------------------------------------------------------------- chapter 12
def train_transformer(epochs: int = 20, seed: int = 0, out_dir="outputs", progress=None,
                      n_train: int = 6000, n_test: int = 1000, length: int = 12,
                      vocab_size: int = 6, lr: float = 3e-3, batch_size: int = 64) -> dict:
    """The TransformerClassifier on "is this sequence a palindrome?"
    (`dlcourse.sequences.palindrome_task`, chance 50%), with Adam and a cosine schedule."""
    from dlcourse.sequences import palindrome_task

    dlcourse.manual_seed(seed)
    train = palindrome_task(n_train, length, vocab_size, seed=seed)
    test = palindrome_task(n_test, length, vocab_size, seed=seed + 1)
    model = dlcourse.models.TransformerClassifier(vocab_size, 2, max_len=length)
    return _classify(model, train, test, "transformer-palindromes", "Transformer: palindrome?", epochs,
                     seed, out_dir, progress, lr, batch_size, cosine=True)


# ---------------------------------------------------------------------- chapter 13
def _reconstruct(model, train, test, name, title, epochs, seed, out_dir, progress, lr, batch_size,
                 train_loader=None) -> dict:
    """Train with Adam on the mean squared reconstruction error; the targets are the inputs."""
    train_loader = train_loader or data.DataLoader((train, train), batch_size=batch_size,
                                                   shuffle=True, seed=seed)
    test_loader = data.DataLoader((test, test), batch_size=512)
    loss_fn = nn.MSELoss()
    history = fit(model, loss_fn, optim.Adam(model, lr=lr), train_loader, epochs,
                  val_loader=test_loader, progress=progress)
    return {"model": model, "history": history, "test_mse": evaluate(model, loss_fn, test_loader)["loss"],
            "plot": _save_plot(history, out_dir, name, title)}


def pca_reconstruction_mse(train, test, code_size: int) -> float:
    """Test MSE of PCA with `code_size` components fitted on `train`: the linear baseline."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=code_size).fit(train)
    return float(np.mean((pca.inverse_transform(pca.transform(test)) - test) ** 2))


def train_autoencoder(epochs: int = 60, seed: int = 0, out_dir="outputs", progress=None,
                      code_size: int = 8, hidden=(32,), lr: float = 3e-3, batch_size: int = 32) -> dict:
    """The dense autoencoder on the digits (64 → 32 → 8 → 32 → 64), compared with PCA
    keeping the same number of components."""
    dlcourse.manual_seed(seed)
    (x_train, _), (x_test, _) = data.load_digits()
    model = dlcourse.models.Autoencoder(x_train.shape[1], code_size, hidden)
    result = _reconstruct(model, x_train, x_test, "autoencoder-digits", "Autoencoder on digits",
                          epochs, seed, out_dir, progress, lr, batch_size)
    result["pca_mse"] = pca_reconstruction_mse(x_train, x_test, code_size)
    return result


def train_convautoencoder(epochs: int = 20, seed: int = 0, out_dir="outputs", progress=None,
                          code_channels: int = 1, lr: float = 3e-3, batch_size: int = 32) -> dict:
    """The convolutional autoencoder on the 1×8×8 digits (code: code_channels × 4 × 4).

    Reports the test MSE next to two baselines: predicting the mean training image for
    every digit (`mean_image_mse`) and PCA keeping as many components as the code has
    numbers (`pca_mse`), which a small convolutional code does not reach on 8×8 images.
    """
    dlcourse.manual_seed(seed)
    (x_train, _), (x_test, _) = data.load_digits(flatten=False)
    model = dlcourse.models.ConvAutoencoder(code_channels=code_channels)
    result = _reconstruct(model, x_train, x_test, "convautoencoder-digits", "Conv autoencoder on digits",
                          epochs, seed, out_dir, progress, lr, batch_size)
    result["mean_image_mse"] = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
    result["pca_mse"] = pca_reconstruction_mse(x_train.reshape(len(x_train), -1),
                                               x_test.reshape(len(x_test), -1), code_channels * 16)
    return result


class _NoisyLoader:
    """Yields (clip(x + N(0, σ²), 0, 1), x): fresh noise on every pass, clean targets."""

    def __init__(self, loader, noise_std: float, seed: int):
        self.loader, self.noise_std = loader, noise_std
        self._rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, target in self.loader:
            noise = self._rng.standard_normal(x.shape).astype(x.dtype) * self.noise_std
            yield np.clip(x + noise, 0, 1), target


def train_denoising(epochs: int = 60, seed: int = 0, out_dir="outputs", progress=None,
                    noise_std: float = 0.3, code_size: int = 16, hidden=(64,), lr: float = 3e-3,
                    batch_size: int = 32) -> dict:
    """A denoising autoencoder: the dense autoencoder trained on Gaussian-noised digits
    (σ = noise_std, clipped to [0, 1]) to reproduce the clean ones.

    Reports, on the test set with one fixed draw of noise, the MSE between the noisy input
    and the clean image (`noisy_mse`) and between the reconstruction and the clean image
    (`denoised_mse`).
    """
    dlcourse.manual_seed(seed)
    (x_train, _), (x_test, _) = data.load_digits()
    model = dlcourse.models.Autoencoder(x_train.shape[1], code_size, hidden)
    clean = data.DataLoader((x_train, x_train), batch_size=batch_size, shuffle=True, seed=seed)
    result = _reconstruct(model, x_train, x_test, "denoising-autoencoder-digits",
                          "Denoising autoencoder on digits", epochs, seed, out_dir, progress, lr,
                          batch_size, train_loader=_NoisyLoader(clean, noise_std, seed))
    noise = np.random.default_rng(seed + 1).standard_normal(x_test.shape).astype(x_test.dtype)
    noisy = np.clip(x_test + noise_std * noise, 0, 1)
    model.eval()
    result["noisy_mse"] = float(np.mean((noisy - x_test) ** 2))
    result["denoised_mse"] = float(np.mean((model(noisy) - x_test) ** 2))
    return result


RECIPES = {
    "mlp": train_mlp,
    "cnn": train_cnn,
    "resnet": train_resnet,
    "lstm": train_lstm,
    "cnnlstm": train_cnnlstm,
    "transformer": train_transformer,
    "autoencoder": train_autoencoder,
    "convautoencoder": train_convautoencoder,
    "denoising": train_denoising,
}
