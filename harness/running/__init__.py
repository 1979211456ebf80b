"""Doing what a ``RunPlan`` says: the lifelong runner, the local and Ray executors, the edited
model saved at a checkpoint, the thread rule, and training an editor ahead of a run."""
