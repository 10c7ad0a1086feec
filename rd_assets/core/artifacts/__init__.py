"""core/artifacts"""
