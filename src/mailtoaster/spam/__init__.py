"""The spam filter: a Bayesian classifier that learns, SpamAssassin-compatible scoring, Junk learning."""
