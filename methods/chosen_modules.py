"""``module_names``: a release's own list of the modules an editor changes, for the hypernetwork
editors whose releases name them per model (UltraEdit's and HiEdit's run scripts and configs)."""

from __future__ import annotations

from .hypernet.modules import EditedModule, named_modules


class ChosenModules:
    """Mixed into an :class:`~editbench.methods.hypernet.EditorCore` whose config has
    ``module_names``: where set, those modules are edited; else the core's own choice."""

    def select_modules(self) -> list[EditedModule]:
        if not self.config.module_names:
            return super().select_modules()
        try:
            return named_modules(self.ctx.model, self.ctx.layout, self.config.module_names)
        except ValueError as error:
            raise ValueError(f"{self.name}: module_names: {error}") from None
