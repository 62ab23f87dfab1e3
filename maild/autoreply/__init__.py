"""The autoresponder: policy (reply or a reason not to), composition, scheduling."""
