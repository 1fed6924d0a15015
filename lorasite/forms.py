from django import forms

from lorasite.errors import ApplicationError


def show_service_error(form: forms.Form, error: ApplicationError) -> None:
    """Show a service error next to the field it names, or at the top of the form."""
    placed = False
    for field, problems in error.errors.items():
        if field in form.fields:
            for problem in problems:
                form.add_error(field, problem)
            placed = True
    if not placed:
        form.add_error(None, error.message)
