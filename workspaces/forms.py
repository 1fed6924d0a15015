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


class WorkspaceRenameForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)
    slug = forms.SlugField(max_length=50, help_text="The workspace's address, /w/<slug>/; old links stop working.")


class WorkspaceDeleteForm(forms.Form):
    """Deleting asks for the workspace's name, typed: workspaces may share a name, and a delete cannot be undone."""

    confirm_name = forms.CharField(
        max_length=100, strip=True, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )

    def __init__(self, *args, workspace_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.workspace_name = workspace_name
        self.fields["confirm_name"].label = f"Type “{workspace_name}” to confirm"

    def clean_confirm_name(self) -> str:
        typed = self.cleaned_data["confirm_name"]
        if typed != self.workspace_name:
            raise forms.ValidationError(f"Type “{self.workspace_name}” exactly to delete this workspace.")
        return typed
