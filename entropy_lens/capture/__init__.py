"""From checkpoints to the store: sampling backends, teacher-forced scoring, and the checkpoint sweep."""
