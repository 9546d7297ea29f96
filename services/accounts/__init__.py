"""Accounts (issue 16): sign-in sessions, users' plans and state, budgets, statements, audit, alerts.

Account rules live here, beside auth/ (credentials and hashing); the store only stores and the
servicers only translate.
"""
