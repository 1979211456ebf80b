"""What is scored at a checkpoint: teacher-forced metrics, generated answers, and the
general-capability question sets; these modules read only core/."""
