"""Rankers behind one interface (`Ranker`); see base.py."""
