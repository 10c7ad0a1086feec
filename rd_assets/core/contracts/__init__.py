"""core/contracts"""
