"""Distillation of NatureLM's decoder: teacher answers, species split, the student and its training (torch)."""
