"""Sparse autoencoders: skdict's SparseAutoencoder vs overcomplete's TopKSAE.

Both train a TopK SAE on the same data (synthetic signals with non-negative
sparse codes over a known dictionary, 20 dB noise), in the same process, with
the same number of latents, k, batch size, epochs, Adam learning rate and torch
threads. overcomplete's ``TopKSAE`` is trained by its ``train_sae`` with its
AuxK criterion ``top_k_auxiliary_loss`` (skdict uses AuxK too) and without its
per-batch monitoring. Reported: training samples per second, final explained
variance on all rows, and skdict's throughput ratio.

Then skdict's SAE and DoubleBatchKSVD at equal n_components and L0 (k) on the
same data: signal recovered and atom recovery.

overcomplete 0.3 needs ``matplotlib<3.9`` (see DESIGN §5). Run:
``python benchmarks/bench_sae.py [--n-samples 20000] [--epochs 20] [--device cpu]``.
"""

import argparse
import time

import numpy as np
import torch

from skdict import DoubleBatchKSVD, SparseAutoencoder
from skdict._optional import resolve_device
from skdict._parallel import effective_n_threads
from skdict.datasets import make_sparse_signals
from skdict.metrics import atom_recovery_rate, explained_variance, signal_recovered


def _skdict_sae(X, args):
    sae = SparseAutoencoder(
        args.n_components, k=args.k, max_iter=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, early_stopping=False, device=args.device,
        n_jobs=args.threads, random_state=0,
    )
    start = time.perf_counter()
    sae.fit(X)
    seconds = time.perf_counter() - start
    X_hat = sae.inverse_transform(sae.transform(X))
    return sae, seconds, X_hat


def _overcomplete_sae(X, args):
    from overcomplete.sae import TopKSAE, train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss

    device = str(resolve_device(args.device, torch))
    torch.manual_seed(0)
    model = TopKSAE(X.shape[1], args.n_components, top_k=args.k, device=device)
    data = torch.utils.data.TensorDataset(torch.from_numpy(X))
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    previous = torch.get_num_threads()
    torch.set_num_threads(effective_n_threads(args.threads))
    try:
        start = time.perf_counter()
        train_sae(model, loader, top_k_auxiliary_loss, optimizer, nb_epochs=args.epochs,
                  monitoring=0, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            _, _, X_hat = model(torch.from_numpy(X).to(device))
    finally:
        torch.set_num_threads(previous)
    return model, seconds, X_hat.cpu().numpy()


def _row(name, seconds, n_seen, X, X_hat):
    return name, n_seen / seconds, explained_variance(X, X_hat), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=64)
    parser.add_argument("--n-components", type=int, default=256)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-ksvd", action="store_true")
    args = parser.parse_args()

    X, D_true, _ = make_sparse_signals(
        args.n_samples, args.n_features, args.n_components, args.k, nonnegative=True,
        dtype=np.float32, random_state=0,
    )
    n_seen = args.n_samples * args.epochs
    sae, sae_s, sae_hat = _skdict_sae(X, args)
    _, oc_s, oc_hat = _overcomplete_sae(X, args)
    rows = [_row("skdict SparseAutoencoder", sae_s, n_seen, X, sae_hat),
            _row("overcomplete TopKSAE", oc_s, n_seen, X, oc_hat)]
    print(f"TopK SAE: N={args.n_samples}, m={args.n_features}, "
          f"{args.n_components} latents, k={args.k}, {args.epochs} epochs, "
          f"batch {args.batch_size}, device {resolve_device(args.device, torch)}, "
          f"{effective_n_threads(args.threads)} threads")
    print(f"{'':28s}{'samples/s':>12s}{'expl. var.':>12s}{'seconds':>10s}")
    for name, speed, ev, seconds in rows:
        print(f"{name:28s}{speed:12.0f}{ev:12.4f}{seconds:10.2f}")
    print(f"throughput ratio skdict / overcomplete: {rows[0][1] / rows[1][1]:.2f}x")

    if args.skip_ksvd:
        return
    start = time.perf_counter()
    ksvd = DoubleBatchKSVD(args.n_components, n_nonzero_coefs=args.k, max_iter=50,
                           batch_size=min(args.n_samples, 10_000), random_state=0).fit(X)
    ksvd_s = time.perf_counter() - start
    ksvd_hat = ksvd.inverse_transform(ksvd.transform(X))
    print(f"\nSame data, {args.n_components} atoms, L0 = {args.k}")
    print(f"{'':28s}{'signal rec.':>12s}{'expl. var.':>12s}{'atoms rec.':>12s}"
          f"{'seconds':>10s}")
    for name, model, X_hat, seconds in [("skdict SparseAutoencoder", sae, sae_hat, sae_s),
                                        ("skdict DoubleBatchKSVD", ksvd, ksvd_hat, ksvd_s)]:
        print(f"{name:28s}{signal_recovered(X, X_hat):12.4f}"
              f"{explained_variance(X, X_hat):12.4f}"
              f"{atom_recovery_rate(D_true, model.components_):12.4f}{seconds:10.2f}")


if __name__ == "__main__":
    main()
