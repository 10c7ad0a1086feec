"""core/bundle"""
