"""Messages, server state, RNG derivation and tensor plumbing shared by every layer."""
