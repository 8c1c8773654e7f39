"""From checkpoints to the store: samplers, teacher-forced scoring, the row layout, the checkpoint sweep,
re-scoring of saved rollouts, and token-replacement interventions."""
