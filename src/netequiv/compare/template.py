"""The commented example configuration that ``netequiv init`` writes."""

EXAMPLE_CONFIG = '''\
# netequiv compare configuration. Run: netequiv compare THIS_FILE.toml --out results/
# Relative paths start at the folder of this file.

seed = 0                      # seeds the input sampler, the neighbourhoods and the solvers

[model_a]
# The model file: a torch.export archive (.pt2), a state dict (.pt, .safetensors) or TorchScript.
# TorchScript models run without forward hooks, so only "input" and "output" can be selected.
path = "network_1.pt"
# A state dict needs the function that builds the untrained model, "package.module:function"
# or "file.py:function", and its arguments:
factory = "netequiv.experiments:mlp"
factory_kwargs = { widths = [1, 1, 1] }   # or factory_args = [[1, 1, 1]]
selection = "act1:0"          # neurons to observe: "LAYER:INDICES ..."; netequiv inspect MODEL lists layers
device = "cpu"                # "cpu", "cuda", "cuda:N" or "auto" (cuda when available)

[model_b]
path = "network_2.pt"
factory = "netequiv.experiments:mlp"
factory_kwargs = { widths = [1, 8, 8, 8, 1] }
selection = "act3:0-7"

[inputs]
# Either an array of inputs, one a row (.npy, or .npz with key = "name"; images are fine) ...
# file = "inputs.npy"
# ... or a sampler over a box (low, high) or a ball (center, radius) in input space.
sampler = "box"
low = [-1.0]
high = [1.0]
n_samples = 1000              # inputs drawn; centres and held-out inputs are taken from them
dimension = 1                 # intrinsic dimension d of the inputs, or "estimate"
# breakdown_path = "path.npy" # ordered inputs beyond the training data: where does the map break?

[neighbourhoods]
kind = "ball"                 # "jacobian", "ball", "burst" or "sequence"
radius = 0.05                 # ball radius, in input units
# scale = 0.01                # burst: standard deviation of each input coordinate
points = 64                   # inputs sampled in each ball or burst
# window = 11                 # sequence: consecutive inputs a window (inputs ordered along a path)
centres = 500                 # inputs the diffusion maps are built on

[correspondence]
kind = "same-inputs"          # "same-inputs", "index-file" or "domain-map"
# index_file = "pairs.npy"    # index-file: integer array (p, 2), rows (row of A's file, row of B's file_b)
#                             # Each network's metric is then taken in its own input space, so the two
#                             # spaces must measure distances alike; otherwise give a domain map.
# domain_map = "package.module:function"   # domain-map: torch function from A's inputs to B's
pairs = 4                     # corresponding pairs that fix the orthogonal alignment
held_out = 200                # corresponding pairs held out to test the transformation

[diffusion_map]               # all optional; see netequiv.NetworkTransformation
# n_components = 1            # embedding coordinates l (default: d)
# n_neighbors = 32            # neighbours of each point in the sparse kernel
# epsilon = "median"          # kernel bandwidth, or the median rule
# remove_harmonics = false    # keep only eigenvectors that are not functions of earlier ones
# interpolation = "linear"    # "nearest", "linear" or "rbf": inverts the embeddings
# eigen_solver = "auto"       # "dense", "arpack" or "chebyshev"; auto: dense up to 1000 points
# eigen_tol = 1e-10           # relative residual of each eigenpair

[test]                        # all optional; see NetworkTransformation.equivalence_test
# alpha = 0.05                # significance level of each of the three tests
# n_permutations = 199        # shuffled pairings in the null distributions
# n_subsamples = 10           # refits on random halves for the spectra's standard errors
# spectrum_tol = 0.1          # tolerance on max |ln mu_A - ln mu_B| of the Laplacian eigenvalues
# residual_tol = 0.1          # tolerance on the held-out relative alignment residual
# error_tol = 0.1             # tolerance on the held-out relative RMSE of the transformation
'''
