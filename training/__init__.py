"""Offline training: teachers, assistant, LR student, hybrid-order relational distillation."""
