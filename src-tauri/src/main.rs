// No console window on Windows in release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    flotilla_host::memory::limit_arenas();
    flotilla_desktop::run();
}
