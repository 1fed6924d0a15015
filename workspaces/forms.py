from django import forms

from workspaces.models import Role


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)
    slug = forms.SlugField(max_length=50, required=False, help_text="Optional; derived from the name when empty.")


class MemberAddForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
