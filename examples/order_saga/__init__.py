"""The order / payment / inventory saga as separate processes: a relay and a consumer per service.

The services' code is in the installed package ``outboxkit.demo`` (so that
``outboxkit demo`` works from a wheel); this example runs it the production
way: each service's relay and consumer is its own ``outboxkit`` process.
See README.md.
"""
