"""One module per method (a :class:`~forgectl.backends.base.Backend` subclass), the base classes
(:mod:`.base`; :mod:`.learned` for learned methods) and declared options (:mod:`.options`).

Which methods exist is said once, in :mod:`forgectl.registry`.
"""
