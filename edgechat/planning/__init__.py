"""What to run and what it costs: run plans, memory estimates, fit, speed, the catalog,
recommendations.
"""
