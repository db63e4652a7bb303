"""``--method auto``: one verdict and map from several methods (docs/methods/auto.md).

``features`` turns the members' outputs into numbers, ``model`` holds the fitted fusion (numpy
only), ``backend`` runs it as a method, ``collect`` and ``fit`` make it (``forgectl train
--method auto``). The package sits above the registry (it runs other registered methods) and
the evaluation layer (its fitting reads benchmark datasets).
"""
