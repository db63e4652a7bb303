"""Training recipes, one module per learned method (``recipe() -> Recipe``).

A recipe says how its method's network is built, fed with synthetic samples and trained
(:class:`forgectl.training.recipe.Recipe`). The registry names each method's recipe module;
the trainer receives the recipe object and never looks it up itself.
"""
