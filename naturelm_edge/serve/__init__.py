"""The full model behind HTTP (the escalation target), and the API schema it shares with devices."""
