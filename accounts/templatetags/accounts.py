from django import template

from santaadmin.roles import has_any_role

register = template.Library()


@register.filter(name="has_any_role")
def has_any_role_filter(user) -> bool:
    """{% if user|has_any_role %}: whether the user holds a role (for the nav)."""
    return has_any_role(user)
