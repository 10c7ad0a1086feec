"""core/trace"""
