"""The published numbers beside ours: released models, paper tables, figures, log tables."""
