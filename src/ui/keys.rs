//! Keyboard shortcuts of the app (the help window lists them: [`super::panels::SHORTCUTS`]).

use eframe::egui;

use crate::app::studio::{StudioApp, Tool};

/// Applies the shortcuts pressed this frame (none while a text field has the keyboard).
pub(crate) fn shortcuts(app: &mut StudioApp, ctx: &egui::Context) {
    if ctx.egui_wants_keyboard_input() {
        return;
    }
    use egui::{Key, Modifiers};
    // Redo is consumed first: Ctrl+Z also matches Ctrl+Shift+Z logically.
    let help = ctx.input_mut(|i| {
        i.consume_key(Modifiers::NONE, Key::F1)
            || i.consume_key(Modifiers::SHIFT, Key::Questionmark)
            || i.consume_key(Modifiers::NONE, Key::Questionmark)
    });
    if help {
        app.show_help = !app.show_help;
    }
    let (redo, undo, next, prev, bigger, smaller, brush, eraser) = ctx.input_mut(|i| {
        (
            i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
                || i.consume_key(Modifiers::COMMAND, Key::Y),
            i.consume_key(Modifiers::COMMAND, Key::Z),
            i.consume_key(Modifiers::NONE, Key::ArrowRight)
                || i.consume_key(Modifiers::NONE, Key::PageDown),
            i.consume_key(Modifiers::NONE, Key::ArrowLeft)
                || i.consume_key(Modifiers::NONE, Key::PageUp),
            i.consume_key(Modifiers::NONE, Key::CloseBracket),
            i.consume_key(Modifiers::NONE, Key::OpenBracket),
            i.consume_key(Modifiers::NONE, Key::P) || i.consume_key(Modifiers::NONE, Key::Num2),
            i.consume_key(Modifiers::NONE, Key::E) || i.consume_key(Modifiers::NONE, Key::Num1),
        )
    });
    if redo {
        app.redo();
    } else if undo {
        app.undo();
    }
    if next {
        app.set_slice(app.view.slice + 1);
    }
    if prev {
        app.set_slice(app.view.slice.saturating_sub(1));
    }
    let (fill, lasso) = ctx.input_mut(|i| {
        (
            i.consume_key(Modifiers::NONE, Key::F) || i.consume_key(Modifiers::NONE, Key::Num3),
            i.consume_key(Modifiers::NONE, Key::L),
        )
    });
    if fill {
        app.tool = Tool::Fill;
    }
    if lasso {
        app.tool = Tool::Lasso;
    }
    let radius = match app.tool {
        Tool::Eraser => &mut app.eraser_radius,
        _ => &mut app.brush_radius,
    };
    if bigger {
        *radius = (*radius + 1.0).min(100.0);
    }
    if smaller {
        *radius = (*radius - 1.0).max(0.5);
    }
    if brush {
        app.tool = Tool::Brush;
    }
    if eraser {
        app.tool = Tool::Eraser;
    }
}
