"""The documents written with a checkpoint: the manifest (kompress.json) and the model card."""
