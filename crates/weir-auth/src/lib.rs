//! Who may call weir's API: API keys, JWT bearer tokens, roles and per-topic ACLs.
