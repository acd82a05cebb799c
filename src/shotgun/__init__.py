"""shotgun: a factory of pretrained materials-property models for shotgun transfer learning."""

__version__ = "0.1.0"
MATERIAL_CLASSES = ("molecule", "polymer", "inorganic")
