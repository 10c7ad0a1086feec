"""core/session"""
