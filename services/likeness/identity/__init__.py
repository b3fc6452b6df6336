"""Who is calling: API keys mapped to a tenant and a role."""
