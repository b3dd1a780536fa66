"""numba compile options shared by every kernel."""

# Reassociation lets numba vectorise the long loops over atoms; NaN/inf handling
# is not relaxed because inputs are validated finite before they reach a kernel.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
