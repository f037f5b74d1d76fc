"""Placeholder: owned by a helper."""

from fastapi import APIRouter

router = APIRouter()

__all__ = ["router"]
